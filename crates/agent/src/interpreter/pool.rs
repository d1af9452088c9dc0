//! Warm pool: started executors of one runtime waiting to be given to a new context. Started
//! on the first use of that runtime (a sandbox that never runs Python pays nothing) and refilled
//! in the background after every take.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::executor::{Executor, SpawnError, Spec};
use crate::reaper::Reaper;

/// Executors of one runtime.
pub struct Pool {
    min_size: usize,
    spec: Box<dyn Fn() -> Spec + Send + Sync>,
    reaper: Arc<Reaper>,
    idle: Mutex<Vec<Executor>>,
    spawning: AtomicUsize,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("min_size", &self.min_size)
            .field("idle", &self.idle())
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// A pool keeping `min_size` idle executors made from `spec()` (called at each spawn, so
    /// environment changes made since are picked up).
    pub fn new(
        min_size: usize,
        reaper: Arc<Reaper>,
        spec: impl Fn() -> Spec + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Pool {
            min_size,
            spec: Box::new(spec),
            reaper,
            idle: Mutex::new(Vec::new()),
            spawning: AtomicUsize::new(0),
        })
    }

    /// A live executor: a warm one if there is one, else a freshly started one.
    pub async fn take(self: &Arc<Self>) -> Result<Executor, SpawnError> {
        loop {
            let warm = self.lock().pop();
            match warm {
                Some(mut executor) => {
                    if executor.discard_pending() {
                        self.refill();
                        return Ok(executor);
                    }
                    // Died while waiting: try the next one.
                }
                None => {
                    let executor = self.spawn().await;
                    if executor.is_ok() {
                        self.refill();
                    }
                    return executor;
                }
            }
        }
    }

    /// Number of idle executors (for tests and health).
    pub fn idle(&self) -> usize {
        self.lock().len()
    }

    /// Starts executors in the background until `min_size` are idle or starting.
    pub fn refill(self: &Arc<Self>) {
        loop {
            let want = self.min_size;
            let have = self.lock().len() + self.spawning.load(Ordering::SeqCst);
            if have >= want {
                return;
            }
            self.spawning.fetch_add(1, Ordering::SeqCst);
            let pool = self.clone();
            tokio::spawn(async move {
                match pool.spawn().await {
                    Ok(executor) => pool.lock().push(executor),
                    Err(err) => tracing::warn!(%err, "could not refill the interpreter pool"),
                }
                pool.spawning.fetch_sub(1, Ordering::SeqCst);
            });
        }
    }

    async fn spawn(&self) -> Result<Executor, SpawnError> {
        Executor::spawn(&(self.spec)(), &self.reaper).await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Executor>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
