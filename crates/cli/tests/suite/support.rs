//! Shared helpers: the binary, a real `sandpit serve` child process, skip checks.

use std::fs::File;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub fn sandpit() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::new(env!("CARGO_BIN_EXE_sandpit"));
    // Never pick up the developer's server or key.
    cmd.env_remove("SANDPIT_URL")
        .env_remove("SANDPIT_KEY")
        .env_remove("SANDPIT_DATA_DIR");
    cmd.timeout(Duration::from_secs(120));
    cmd
}

/// The image directory of the real-server tests, if the default image is built there.
/// Otherwise prints a loud SKIPPED line and returns `None`.
pub fn images_dir_or_skip(test: &str) -> Option<PathBuf> {
    let dir = PathBuf::from(
        std::env::var("SANDPIT_IMAGES_DIR").unwrap_or_else(|_| "/var/lib/sandpit/images".into()),
    );
    if dir.join("default").join("image.json").is_file() {
        return Some(dir);
    }
    eprintln!(
        "SKIPPED {test}: no default image in {} (run `sandpit image build --images-dir {}`)",
        dir.display(),
        dir.display()
    );
    None
}

/// A raw `GET path` to the server at `url` (`http://host:port`), with a bearer key if given;
/// the whole answer (status line, headers, body) as text.
pub fn raw_get(url: &str, path: &str, key: Option<&str>) -> String {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://");
    let mut tcp = TcpStream::connect(addr).unwrap();
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).unwrap();
    answer
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `sandpit serve` on a free loopback port with a fresh data directory (or one the caller
/// keeps, to restart a server on it); stopped with SIGINT (graceful shutdown) on drop.
pub struct Served {
    child: Child,
    pub url: String,
    pub key: String,
    pub data_dir: PathBuf,
    /// The fresh data directory, removed on drop (`None` when the caller owns it).
    _owned_dir: Option<TempDir>,
    log: PathBuf,
}

impl Served {
    pub fn start(images_dir: &Path) -> Served {
        Served::start_with(images_dir, &[])
    }

    /// Like [`Served::start`] with more `sandpit serve` arguments.
    pub fn start_with(images_dir: &Path, extra: &[&str]) -> Served {
        let data_dir = tempfile::tempdir().unwrap();
        let mut served = Served::start_in(images_dir, data_dir.path(), extra);
        served._owned_dir = Some(data_dir);
        served
    }

    /// `sandpit serve` on `data_dir`, which the caller keeps (a restarted server finds what
    /// the previous one left there). The log (`serve.log` in the data dir) is appended to.
    pub fn start_in(images_dir: &Path, data_dir: &Path, extra: &[&str]) -> Served {
        let log = data_dir.join("serve.log");
        let log_file = || {
            File::options()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap()
        };
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_sandpit"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(data_dir)
            .arg("--images-dir")
            .arg(images_dir)
            .args(extra)
            .env_remove("SANDPIT_ADMIN_KEY")
            .stdin(Stdio::null())
            .stdout(log_file())
            .stderr(log_file())
            .spawn()
            .unwrap();
        let mut served = Served {
            child,
            url: format!("http://127.0.0.1:{port}"),
            key: String::new(),
            data_dir: data_dir.to_owned(),
            _owned_dir: None,
            log,
        };
        served.wait_ready(port);
        served
    }

    /// Host pid of the `sandpit serve` process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILLs the server (no shutdown, like a crash) and reaps it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn wait_ready(&mut self, port: u16) {
        let key_file = self.data_dir.join("admin.key");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("sandpit serve exited early ({status}):\n{}", self.log());
            }
            // The banner is printed after the listener is bound and the key written, so a
            // test that reads the log right after start sees it.
            if TcpStream::connect(("127.0.0.1", port)).is_ok()
                && self
                    .log()
                    .contains(&format!("sandpit listening on {}", self.url))
                && let Ok(key) = std::fs::read_to_string(&key_file)
                && !key.trim().is_empty()
            {
                self.key = key.trim().to_owned();
                return;
            }
            assert!(
                Instant::now() < deadline,
                "sandpit serve not ready after 60 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `sandpit` with `--url` and `--key` of this server.
    pub fn cli(&self) -> assert_cmd::Command {
        let mut cmd = sandpit();
        cmd.env("SANDPIT_URL", &self.url)
            .env("SANDPIT_KEY", &self.key);
        cmd
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("sandpit serve did not stop on SIGINT; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
