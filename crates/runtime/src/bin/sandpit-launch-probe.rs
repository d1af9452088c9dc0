//! TEST TOOL, not shipped: a stand-in for `sandpit-agent launch` used by the runtime's tests.
//!
//! `sandpit-launch-probe launch` reads a `LaunchConfig` on stdin and enters the sandbox like the
//! agent does. Then, as the sandbox's PID 1, it accepts connections on the inherited listener:
//! each connection sends one line, a shell command, which runs as `/bin/sh -c <line>` with the
//! config's environment; the reply is the command's combined stdout/stderr followed by
//! `__EXIT__ <code>\n` (128+signal for a killed command), then the connection closes.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use nix::sys::wait::{WaitStatus, waitpid};

/// Exit codes by pid, plus a count of spawned commands (wakes the reaper when it has no children).
struct Shared {
    statuses: Mutex<HashMap<i32, i32>>,
    exited: Condvar,
    spawned: Mutex<u64>,
    spawn: Condvar,
}

type Statuses = Arc<Shared>;

fn main() {
    if std::env::args().nth(1).as_deref() != Some("launch") {
        eprintln!("usage: sandpit-launch-probe launch  (LaunchConfig JSON on stdin)");
        std::process::exit(2);
    }
    let config = sandpit_isolation::launch_from_stdin();
    let listener = match sandpit_isolation::launch::take_listener(config.listen_fd) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("probe: no listener: {e}");
            std::process::exit(1);
        }
    };
    let statuses: Statuses = Arc::new(Shared {
        statuses: Mutex::new(HashMap::new()),
        exited: Condvar::new(),
        spawned: Mutex::new(0),
        spawn: Condvar::new(),
    });
    let reaper = statuses.clone();
    // As PID 1 we reap every process; statuses of the commands we started are handed over.
    std::thread::spawn(move || {
        loop {
            let seen = reaper.spawned.lock().map(|n| *n).unwrap_or(0);
            match waitpid(None, None) {
                Ok(WaitStatus::Exited(pid, code)) => record(&reaper, pid.as_raw(), code),
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    record(&reaper, pid.as_raw(), 128 + sig as i32)
                }
                Ok(_) => {}
                Err(_) => {
                    // No children: sleep until the next spawn.
                    if let Ok(n) = reaper.spawned.lock() {
                        let _ = reaper
                            .spawn
                            .wait_timeout_while(n, Duration::from_secs(1), |n| *n == seen);
                    }
                }
            }
        }
    });
    let env = Arc::new(config.env);
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let (statuses, env) = (statuses.clone(), env.clone());
        std::thread::spawn(move || {
            if let Err(e) = serve(conn, &statuses, &env) {
                eprintln!("probe: connection failed: {e}");
            }
        });
    }
}

fn record(shared: &Shared, pid: i32, code: i32) {
    if let Ok(mut m) = shared.statuses.lock() {
        m.insert(pid, code);
        shared.exited.notify_all();
    }
}

fn serve(conn: UnixStream, statuses: &Statuses, env: &[(String, String)]) -> std::io::Result<()> {
    let mut line = String::new();
    BufReader::new(conn.try_clone()?).read_line(&mut line)?;
    let (mut reader, writer) = std::io::pipe()?;
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(line.trim_end_matches('\n'))
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer);
    let child = cmd.spawn()?;
    drop(cmd);
    if let Ok(mut n) = statuses.spawned.lock() {
        *n += 1;
        statuses.spawn.notify_all();
    }
    let pid = child.id() as i32;
    let mut output = Vec::new();
    reader.read_to_end(&mut output)?;
    let mut m = statuses
        .statuses
        .lock()
        .map_err(|_| std::io::Error::other("poisoned"))?;
    let code = loop {
        if let Some(code) = m.remove(&pid) {
            break code;
        }
        m = statuses
            .exited
            .wait(m)
            .map_err(|_| std::io::Error::other("poisoned"))?;
    };
    drop(m);
    let mut conn = conn;
    conn.write_all(&output)?;
    writeln!(conn, "__EXIT__ {code}")
}
