//! Progress reporting for long image operations (builds, imports).

/// Receives progress of a build or import. Implementations must be cheap: they are called from
/// the thread doing the work.
pub trait Progress: Send + Sync {
    /// A new stage begins (`"bootstrap"`, `"packages"`, `"node"`, `"finalize"`, `"layers"`...).
    /// `total` is the amount [`Progress::advance`] counts up to, when known.
    fn stage(&self, name: &str, total: Option<u64>);
    /// The current stage has reached `done` (an absolute position, not a delta).
    fn advance(&self, done: u64);
    /// A human-readable status line.
    fn message(&self, msg: &str);
}

/// A [`Progress`] that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn stage(&self, _name: &str, _total: Option<u64>) {}
    fn advance(&self, _done: u64) {}
    fn message(&self, _msg: &str) {}
}
