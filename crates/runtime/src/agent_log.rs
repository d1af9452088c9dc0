//! The host side of a sandbox's `agent.log`: the sandbox init's stdout and stderr are a pipe,
//! and a thread of the driver copies it into `agent.log` with a size cap. Past the cap the file
//! becomes `agent.log.1` (replacing the older one) and a new `agent.log` starts, so a sandbox's
//! log never takes more than twice the cap on the host, whoever in the sandbox writes to it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// Default cap of `agent.log` (and of its one rotated copy).
pub const DEFAULT_MAX_BYTES: u64 = 4 * 1024 * 1024;

/// A log file that rotates to `<path>.1` once `max_bytes` were written to it. The file is
/// opened for each write, not held: an idle sandbox's log costs the server no descriptor (its
/// agent logs rarely; thousands of idle sandboxes would otherwise hold thousands of files).
#[derive(Debug)]
pub struct CappedLog {
    path: PathBuf,
    max_bytes: u64,
    written: u64,
}

impl CappedLog {
    /// Creates (truncates) `path` and removes an old rotated copy: one start, one log.
    pub fn create(path: &Path, max_bytes: u64) -> io::Result<Self> {
        match fs::remove_file(rotated(path)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        open_new(path)?;
        Ok(CappedLog {
            path: path.to_owned(),
            max_bytes: max_bytes.max(1),
            written: 0,
        })
    }

    /// Appends `bytes`, rotating whenever the current file reaches the cap (a chunk is split
    /// so no file ever exceeds it).
    pub fn write(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        let mut file = None;
        while !bytes.is_empty() {
            if self.written >= self.max_bytes {
                self.rotate()?;
                file = None;
            }
            let room = usize::try_from(self.max_bytes - self.written).unwrap_or(usize::MAX);
            let (now, rest) = bytes.split_at(bytes.len().min(room));
            let open = match file.as_mut() {
                Some(open) => open,
                None => file.insert(OpenOptions::new().append(true).open(&self.path)?),
            };
            open.write_all(now)?;
            self.written += now.len() as u64;
            bytes = rest;
        }
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        fs::rename(&self.path, rotated(&self.path))?;
        open_new(&self.path)?;
        self.written = 0;
        Ok(())
    }
}

/// `<path>.1`.
pub fn rotated(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

fn open_new(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

/// Copies everything read from `pipe` into `log` until every writer closed it (the sandbox
/// init and whatever inherited its stdio exited), as a task of the async runtime: no thread per
/// sandbox (thousands of idle sandboxes would mean thousands of thread stacks, and every fork
/// of the server copies their mappings), and a read buffer only while bytes arrive. Write
/// errors (disk full) drop the bytes but keep reading, so the sandbox never blocks on its
/// stderr.
///
/// The end of the pipe is also how the driver learns that the sandbox is gone (no pidfd held
/// per sandbox): the init is pid 1 of its pid namespace, so when it exits the kernel kills
/// every process of the namespace, and the last writer closes with them. `eof` is fired then.
/// Must be called within a Tokio runtime.
pub fn spawn_pump(
    pipe: OwnedFd,
    mut log: CappedLog,
    eof: std::sync::Arc<Eof>,
) -> io::Result<tokio::task::JoinHandle<()>> {
    let pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(pipe)?;
    Ok(tokio::spawn(async move {
        loop {
            if pipe.readable().await.is_err() {
                break;
            }
            let mut buf = vec![0u8; 64 * 1024];
            match pipe.try_read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let _ = log.write(&buf[..n]);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => break,
            }
        }
        drop(pipe);
        eof.fire();
    }))
}

/// What runs when a log pipe ends ([`spawn_pump`]): armed once the sandbox's pid is known, which
/// may be after the pipe ended already (the init died at once); it then runs at arming.
#[derive(Default)]
pub struct Eof {
    state: std::sync::Mutex<EofState>,
}

#[derive(Default)]
enum EofState {
    #[default]
    Open,
    Ended,
    Armed(Box<dyn FnOnce() + Send>),
    Done,
}

impl Eof {
    /// Runs `then` on a thread of its own (it may block) when the pipe ends, or now if it has
    /// ended already.
    pub fn arm(&self, then: impl FnOnce() + Send + 'static) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match std::mem::take(&mut *state) {
            EofState::Open => *state = EofState::Armed(Box::new(then)),
            _ => {
                *state = EofState::Done;
                drop(state);
                std::thread::spawn(then);
            }
        }
    }

    fn fire(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match std::mem::replace(&mut *state, EofState::Done) {
            EofState::Armed(then) => {
                drop(state);
                std::thread::spawn(then);
            }
            EofState::Open => *state = EofState::Ended,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(path: &Path) -> u64 {
        fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    }

    #[test]
    fn rotates_at_the_cap_and_keeps_one_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.log");
        fs::write(rotated(&path), "from an earlier start").unwrap();
        let mut log = CappedLog::create(&path, 100).unwrap();
        assert!(!rotated(&path).exists(), "an earlier start's copy is gone");
        log.write(&[b'a'; 60]).unwrap();
        log.write(&[b'b'; 60]).unwrap();
        assert_eq!(size(&path), 20);
        assert_eq!(size(&rotated(&path)), 100);
        for _ in 0..1000 {
            log.write(&[b'c'; 77]).unwrap();
        }
        assert!(size(&path) <= 100 && size(&rotated(&path)) == 100);
        assert!(fs::read(&path).unwrap().iter().all(|b| *b == b'c'));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_pump_bounds_a_flood_through_a_real_pipe() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.log");
        let (read, write) = nix::unistd::pipe().unwrap();
        let eof = std::sync::Arc::new(Eof::default());
        let pump = spawn_pump(read, CappedLog::create(&path, 4096).unwrap(), eof.clone()).unwrap();
        tokio::task::spawn_blocking(move || {
            let mut writer = File::from(write);
            for _ in 0..1000 {
                writer.write_all(&[b'x'; 1000]).unwrap();
            }
            writer.write_all(b"last line\n").unwrap();
        })
        .await
        .unwrap();
        pump.await.unwrap();
        let (old, new) = (fs::read(rotated(&path)).unwrap(), fs::read(&path).unwrap());
        assert!([old, new].concat().ends_with(b"last line\n"));
        assert!(size(&path) <= 4096 && size(&rotated(&path)) <= 4096);
        // Ended before it was armed: the callback runs at arming.
        let (tx, rx) = std::sync::mpsc::channel();
        eof.arm(move || tx.send(()).unwrap());
        rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_armed_eof_fires_when_the_last_writer_closes() {
        let dir = tempfile::tempdir().unwrap();
        let (read, write) = nix::unistd::pipe().unwrap();
        let eof = std::sync::Arc::new(Eof::default());
        let log = CappedLog::create(&dir.path().join("a.log"), 4096).unwrap();
        let _pump = spawn_pump(read, log, eof.clone()).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        eof.arm(move || tx.send(()).unwrap());
        let second = nix::unistd::dup(&write).unwrap();
        drop(write);
        let short = std::time::Duration::from_millis(200);
        assert!(rx.recv_timeout(short).is_err(), "a writer is still open");
        drop(second);
        rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
    }
}
