//! A throw-away PostgreSQL server for tests: its own data directory in the temp dir, reached
//! through a Unix socket in that directory only (no TCP port), stopped and deleted on drop.
//!
//! It runs the Debian server binaries (`/usr/lib/postgresql/<major>/bin`, or the directory in
//! `SANDPIT_PG_BIN`). `initdb` refuses root, so as root the server runs as the `postgres`
//! system user (through `runuser`). The cluster is created once per machine as a template
//! and copied for each server, which makes a start take a fraction of a second.
//!
//! When PostgreSQL is not installed, [`TestPostgres::start`] returns `None` (the caller skips)
//! unless `CI` is set, where it panics: CI must run these tests.

// Test support: a failed set-up is a failed test, said loudly.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// A running test server.
pub struct TestPostgres {
    dir: PathBuf,
    bin: PathBuf,
    run_as: Option<&'static str>,
}

const TEMPLATE_VERSION: &str = "v1";

impl TestPostgres {
    /// Starts a server (see the module docs); `None` when PostgreSQL is missing outside CI.
    pub fn start() -> Option<TestPostgres> {
        let Some(bin) = find_bin() else {
            let message = "PostgreSQL server binaries not found (no initdb in $SANDPIT_PG_BIN \
                           or /usr/lib/postgresql/*/bin): install the Debian package postgresql-15 \
                           (scripts/lib.sh install_debian_packages)";
            if std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false") {
                panic!("{message}; CI runs the PostgreSQL tests, so this is a failure");
            }
            eprintln!("skipped: {message}");
            return None;
        };
        let run_as = is_root().then_some("postgres");
        let template = template(&bin, run_as);
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sandpit-pg-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the test PostgreSQL dir");
        let pg = TestPostgres { dir, bin, run_as };
        let data = pg.data();
        run(Command::new("cp").arg("-a").arg(&template).arg(&data));
        // Chown the socket directory (the data directory is the template's copy, already owned).
        if let Some(user) = run_as {
            run(Command::new("chown").arg(user).arg(&pg.dir));
        }
        let conf = format!(
            "\nlisten_addresses = ''\nunix_socket_directories = '{}'\nfsync = off\n\
             synchronous_commit = off\nfull_page_writes = off\nshared_buffers = 16MB\n\
             max_connections = 100\n",
            pg.dir.display()
        );
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .expect("opening postgresql.conf");
        std::io::Write::write_all(&mut file, conf.as_bytes()).expect("writing postgresql.conf");
        drop(file);
        let mut start = pg.command("pg_ctl");
        start
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(pg.dir.join("server.log"))
            .args(["-w", "-t", "60", "start"]);
        let status = start
            .stdout(Stdio::null())
            .status()
            .expect("running pg_ctl start");
        if !status.success() {
            let log = std::fs::read_to_string(pg.dir.join("server.log")).unwrap_or_default();
            panic!("the test PostgreSQL did not start ({status}):\n{log}");
        }
        Some(pg)
    }

    /// URL of database `postgres` as the superuser `postgres` (trust authentication).
    pub fn url(&self) -> String {
        format!("postgres://postgres@/postgres?host={}", self.dir.display())
    }

    /// The directory of the socket (and the server's log, `server.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn command(&self, program: &str) -> Command {
        command(&self.bin, program, self.run_as)
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    // The effective uid, from procfs (no libc in this crate).
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn find_bin() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SANDPIT_PG_BIN") {
        let dir = PathBuf::from(dir);
        return dir.join("initdb").exists().then_some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((major, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn command(bin: &Path, program: &str, run_as: Option<&str>) -> Command {
    let mut c = match run_as {
        Some(user) => {
            let mut runuser = Command::new("runuser");
            runuser.args(["-u", user, "--"]).arg(bin.join(program));
            runuser
        }
        None => Command::new(bin.join(program)),
    };
    // Somewhere the server's user may enter.
    c.current_dir(std::env::temp_dir());
    c
}

fn run(command: &mut Command) {
    let output = command.output().expect("running a PostgreSQL tool");
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The initialised cluster every test server copies, made once (under a file lock).
fn template(bin: &Path, run_as: Option<&str>) -> PathBuf {
    let major = bin
        .parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let uid = if run_as.is_some() { "root" } else { "user" };
    let base = std::env::temp_dir().join(format!(
        "sandpit-pg-template-{uid}-{major}-{TEMPLATE_VERSION}"
    ));
    let data = base.join("data");
    if data.join("PG_VERSION").exists() {
        return data;
    }
    std::fs::create_dir_all(&base).expect("creating the PostgreSQL template dir");
    let lock = std::fs::File::create(base.join("lock")).expect("creating the template lock");
    lock.lock().expect("locking the template");
    if !data.join("PG_VERSION").exists() {
        let partial = base.join("partial");
        let _ = std::fs::remove_dir_all(&partial);
        std::fs::create_dir_all(&partial).expect("creating the template data dir");
        if let Some(user) = run_as {
            run(Command::new("chown").arg(user).arg(&partial));
        }
        run(command(bin, "initdb", run_as)
            .arg("-D")
            .arg(&partial)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "--locale=C",
                "--encoding=UTF8",
            ]));
        std::fs::rename(&partial, &data).expect("publishing the template");
    }
    data
}
