//! Running the build's external commands (debootstrap, apt in a chroot, npm) with their output
//! streamed line by line to callbacks and the last lines kept for error messages.

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::ImageError;

const TAIL_LINES: usize = 12;
const CHROOT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs `cmd`, calling `on_stdout`/`on_stderr` for each output line. A failure to start, a
/// non-zero exit or running longer than `limit` (the command and all its descendants are then
/// killed) becomes `ImageError::Build { stage }` carrying the last output lines.
pub(crate) fn run_lines(
    cmd: &mut Command,
    stage: &str,
    limit: Duration,
    mut on_stdout: impl FnMut(&str),
    on_stderr: impl FnMut(&str) + Send,
) -> Result<(), ImageError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ImageError::build(stage, format!("cannot run {program}: {e}")))?;
    let tail = Mutex::new(VecDeque::with_capacity(TAIL_LINES));
    let remember = |line: &str| {
        if let Ok(mut tail) = tail.lock() {
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line.to_owned());
        }
    };
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let timed_out = AtomicBool::new(false);
    let mut on_stderr = on_stderr;
    let status = std::thread::scope(|scope| {
        let (done, watchdog) = mpsc::channel::<()>();
        let (pid, timed_out) = (child.id(), &timed_out);
        scope.spawn(move || {
            if let Err(RecvTimeoutError::Timeout) = watchdog.recv_timeout(limit) {
                timed_out.store(true, Ordering::SeqCst);
                kill_tree(pid);
            }
        });
        let errors = stderr.map(|stderr| {
            let (remember, on_stderr) = (&remember, &mut on_stderr);
            scope.spawn(move || {
                for_each_line(stderr, |line| {
                    remember(line);
                    on_stderr(line);
                });
            })
        });
        if let Some(stdout) = stdout {
            for_each_line(stdout, |line| {
                remember(line);
                on_stdout(line);
            });
        }
        if let Some(errors) = errors {
            let _ = errors.join();
        }
        let status = child.wait();
        drop(done);
        status
    })
    .map_err(|e| ImageError::build(stage, format!("waiting for {program}: {e}")))?;
    if timed_out.load(Ordering::SeqCst) {
        return Err(ImageError::build(
            stage,
            format!(
                "{program} did not finish within {} s and was killed",
                limit.as_secs()
            ),
        ));
    }
    if status.success() {
        return Ok(());
    }
    let tail = tail.into_inner().unwrap_or_default();
    let tail: Vec<String> = tail.into_iter().collect();
    Err(ImageError::build(
        stage,
        format!("{program} failed ({status}): {}", tail.join(" | ")),
    ))
}

/// Runs `cmd` and returns its stdout (stderr only goes into the error on failure).
pub(crate) fn output(
    cmd: &mut Command,
    stage: &str,
    limit: Duration,
) -> Result<String, ImageError> {
    let mut out = String::new();
    run_lines(
        cmd,
        stage,
        limit,
        |line| {
            out.push_str(line);
            out.push('\n');
        },
        |_| {},
    )?;
    Ok(out)
}

/// SIGKILLs `root` and every descendant (found through /proc), a few rounds to catch
/// processes forked meanwhile.
fn kill_tree(root: u32) {
    for _ in 0..3 {
        let mut pids = descendants(root);
        pids.push(root);
        for pid in pids {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

fn descendants(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may contain spaces and parens, so split after the
        // last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut out = Vec::new();
    let mut queue = vec![root];
    while let Some(pid) = queue.pop() {
        for &child in children.get(&pid).map(Vec::as_slice).unwrap_or_default() {
            out.push(child);
            queue.push(child);
        }
    }
    out
}

fn for_each_line(stream: impl Read, mut f: impl FnMut(&str)) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    // Lines may not be UTF-8 (dpkg output in odd locales): decode lossily, never stop early.
    while let Ok(n) = reader.read_until(b'\n', &mut buf) {
        if n == 0 {
            break;
        }
        let line = String::from_utf8_lossy(&buf);
        f(line.trim_end_matches(['\n', '\r']));
        buf.clear();
    }
}

/// A command with a clean environment (plus proxy settings, which the host may need to reach
/// its mirror).
pub(crate) fn clean_command(program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", CHROOT_PATH)
        .env("HOME", "/root")
        .env("LANG", "C.UTF-8")
        .env("DEBIAN_FRONTEND", "noninteractive");
    for var in [
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
    ] {
        if let Some(value) = std::env::var_os(var) {
            cmd.env(var, value);
        }
    }
    cmd
}

/// `sh -c script` in a private mount namespace where `$R` is `rootfs` with /proc mounted (and
/// the host's /dev bound if the rootfs has no device nodes). The mounts die with the
/// namespace, so even a killed build leaves no mount on the host to clean up. Extra arguments
/// appended by the caller are `"$@"`.
pub(crate) fn in_rootfs(rootfs: &Path, script: &str) -> Command {
    const PRELUDE: &str = "set -e; R=\"$1\"; shift; mount -t proc proc \"$R/proc\"; \
        [ -c \"$R/dev/null\" ] || mount --rbind /dev \"$R/dev\"; ";
    let mut cmd = clean_command("unshare");
    cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(format!("{PRELUDE}{script}"))
        .arg("sh")
        .arg(rootfs);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn overlong_commands_are_killed_with_their_children() {
        let started = std::time::Instant::now();
        // The grandchild keeps stdout open: only killing the whole tree ends the read.
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 30 & sleep 30; echo never"]);
        let err = output(&mut cmd, "t", Duration::from_millis(300)).unwrap_err();
        assert!(err.to_string().contains("did not finish"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn failure_carries_output_tail() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo first; echo oops >&2; exit 3"]);
        let mut seen = Vec::new();
        let err = run_lines(
            &mut cmd,
            "test",
            MINUTE,
            |l| seen.push(l.to_owned()),
            |_| {},
        )
        .unwrap_err();
        assert_eq!(seen, ["first"]);
        let msg = err.to_string();
        assert!(
            msg.contains("stage test") && msg.contains("oops") && msg.contains("first"),
            "{msg}"
        );
    }

    #[test]
    fn output_collects_stdout() {
        let out = output(
            Command::new("sh").args(["-c", "printf 'a\\nb'"]),
            "t",
            MINUTE,
        )
        .unwrap();
        assert_eq!(out, "a\nb\n");
    }

    #[test]
    fn missing_program_is_a_build_error() {
        let err = output(&mut Command::new("/nonexistent/prog"), "t", MINUTE).unwrap_err();
        assert!(matches!(err, ImageError::Build { .. }), "{err}");
    }
}
