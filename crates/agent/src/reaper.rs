//! Child reaping. The agent is PID 1 inside a sandbox, so every orphan of the sandbox becomes
//! its child and must be waited for, or zombies pile up. One task owns `waitpid(-1)`; code that
//! needs a child's exit status registers the pid and gets it through a oneshot channel.
//!
//! Nothing else in the agent may call `wait` (e.g. `tokio::process::Child::wait`): it would race
//! this reaper for the same statuses.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;

/// How long the status of a pid nobody registered is kept (orphans, or a register that comes
/// after the child already exited).
const UNCLAIMED_TTL: Duration = Duration::from_secs(10);

/// Dispatches exit statuses to the tasks that wait for them.
#[derive(Debug, Default)]
pub struct Reaper {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    waiters: HashMap<i32, oneshot::Sender<i32>>,
    unclaimed: HashMap<i32, (i32, Instant)>,
}

impl Reaper {
    /// A reaper without a signal task (for unit tests; call [`Reaper::reap`] by hand).
    pub fn new() -> Arc<Self> {
        Arc::new(Reaper::default())
    }

    /// Creates the reaper and starts its SIGCHLD task on the current runtime. Call before the
    /// first child is spawned.
    pub fn start() -> std::io::Result<Arc<Self>> {
        let reaper = Reaper::new();
        let mut sigchld = signal(SignalKind::child())?;
        let task = reaper.clone();
        tokio::spawn(async move {
            loop {
                task.reap();
                if sigchld.recv().await.is_none() {
                    break;
                }
            }
        });
        Ok(reaper)
    }

    /// Registers interest in `pid`, spawned at `spawned_at` (taken before the spawn). The
    /// receiver yields the shell-style exit code: the status, or 128 + signal number.
    pub fn register(&self, pid: i32, spawned_at: Instant) -> oneshot::Receiver<i32> {
        let (tx, rx) = oneshot::channel();
        let mut inner = self.lock();
        match inner.unclaimed.remove(&pid) {
            // Recorded after our spawn: it is our child's status. A status recorded earlier
            // belongs to a previous process that had the same pid.
            Some((code, at)) if at >= spawned_at => {
                let _ = tx.send(code);
            }
            _ => {
                inner.waiters.insert(pid, tx);
            }
        }
        rx
    }

    /// Collects every exited child without blocking and dispatches the statuses. Returns how
    /// many children were reaped.
    pub fn reap(&self) -> usize {
        let mut reaped = 0;
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => {
                    self.dispatch(pid.as_raw(), code);
                    reaped += 1;
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    self.dispatch(pid.as_raw(), 128 + sig as i32);
                    reaped += 1;
                }
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(err) => {
                    tracing::warn!(%err, "waitpid failed");
                    break;
                }
            }
        }
        reaped
    }

    /// Collects only the registered children that exited (`waitpid(pid)` for each), leaving
    /// every other child of the process alone: for unit tests, which share their process with
    /// other tests that wait for their own children.
    pub fn reap_registered(&self) {
        let pids: Vec<i32> = self.lock().waiters.keys().copied().collect();
        for pid in pids {
            match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => self.dispatch(pid, code),
                Ok(WaitStatus::Signaled(_, sig, _)) => self.dispatch(pid, 128 + sig as i32),
                _ => {}
            }
        }
    }

    fn dispatch(&self, pid: i32, code: i32) {
        let now = Instant::now();
        let mut inner = self.lock();
        match inner.waiters.remove(&pid) {
            Some(tx) => {
                let _ = tx.send(code);
            }
            None => {
                inner
                    .unclaimed
                    .retain(|_, (_, at)| now.duration_since(*at) < UNCLAIMED_TTL);
                inner.unclaimed.insert(pid, (code, now));
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    #[allow(clippy::zombie_processes)] // the reaper under test does the waiting
    fn registered_and_late_registered_children_get_their_status() {
        let reaper = Reaper::new();
        let t0 = Instant::now();
        let a = Command::new("sh").args(["-c", "exit 7"]).spawn().unwrap();
        let rx_a = reaper.register(a.id() as i32, t0);
        let b = Command::new("sh")
            .args(["-c", "kill -9 $$"])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert!(reaper.reap() >= 2);
        // Registered after the exit: taken from the unclaimed table.
        let rx_b = reaper.register(b.id() as i32, t0);
        assert_eq!(rx_a.blocking_recv().unwrap(), 7);
        assert_eq!(rx_b.blocking_recv().unwrap(), 128 + 9);
        // Nothing is left as a zombie.
        assert!(!std::path::Path::new(&format!("/proc/{}", a.id())).exists());
    }

    #[test]
    fn stale_status_of_a_reused_pid_is_ignored() {
        let reaper = Reaper::new();
        reaper.dispatch(4242, 1);
        let rx = reaper.register(4242, Instant::now() + Duration::from_secs(1));
        let mut rx = rx;
        assert!(rx.try_recv().is_err());
        reaper.dispatch(4242, 5);
        assert_eq!(rx.try_recv().unwrap(), 5);
    }
}
