//! The host side of a sandbox's `agent.log`: the sandbox init's stdout and stderr are a pipe,
//! and a thread of the driver copies it into `agent.log` with a size cap. Past the cap the file
//! becomes `agent.log.1` (replacing the older one) and a new `agent.log` starts, so a sandbox's
//! log never takes more than twice the cap on the host, whoever in the sandbox writes to it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// Default cap of `agent.log` (and of its one rotated copy).
pub const DEFAULT_MAX_BYTES: u64 = 4 * 1024 * 1024;

/// A log file that rotates to `<path>.1` once `max_bytes` were written to it.
#[derive(Debug)]
pub struct CappedLog {
    path: PathBuf,
    max_bytes: u64,
    file: File,
    written: u64,
}

impl CappedLog {
    /// Creates (truncates) `path` and removes an old rotated copy: one start, one log.
    pub fn create(path: &Path, max_bytes: u64) -> io::Result<Self> {
        match fs::remove_file(rotated(path)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        Ok(CappedLog {
            file: open_new(path)?,
            path: path.to_owned(),
            max_bytes: max_bytes.max(1),
            written: 0,
        })
    }

    /// Appends `bytes`, rotating whenever the current file reaches the cap (a chunk is split
    /// so no file ever exceeds it).
    pub fn write(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            if self.written >= self.max_bytes {
                self.rotate()?;
            }
            let room = usize::try_from(self.max_bytes - self.written).unwrap_or(usize::MAX);
            let (now, rest) = bytes.split_at(bytes.len().min(room));
            self.file.write_all(now)?;
            self.written += now.len() as u64;
            bytes = rest;
        }
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        fs::rename(&self.path, rotated(&self.path))?;
        self.file = open_new(&self.path)?;
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
/// init and whatever inherited its stdio exited), on a thread of its own (blocking reads; the
/// async runtime stays free). Write errors (disk full) drop the bytes but keep reading, so the
/// sandbox never blocks on its stderr.
pub fn spawn_pump(
    pipe: OwnedFd,
    mut log: CappedLog,
    id: &str,
) -> io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("agent-log-{id}"))
        .spawn(move || {
            let mut pipe = File::from(pipe);
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        let _ = log.write(&buf[..n]);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return,
                }
            }
        })
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

    #[test]
    fn the_pump_bounds_a_flood_through_a_real_pipe() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.log");
        let (read, write) = nix::unistd::pipe().unwrap();
        let pump = spawn_pump(read, CappedLog::create(&path, 4096).unwrap(), "t").unwrap();
        let mut writer = File::from(write);
        for _ in 0..1000 {
            writer.write_all(&[b'x'; 1000]).unwrap();
        }
        writer.write_all(b"last line\n").unwrap();
        drop(writer);
        pump.join().unwrap();
        let (old, new) = (fs::read(rotated(&path)).unwrap(), fs::read(&path).unwrap());
        assert!([old, new].concat().ends_with(b"last line\n"));
        assert!(size(&path) <= 4096 && size(&rotated(&path)) <= 4096);
    }
}
