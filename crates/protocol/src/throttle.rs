//! The one rule for log lines a sandbox can trigger at will (refused egress connections, bad
//! executor events, ...): at most [`Throttle::burst`] lines per [`Throttle::window`], the rest
//! counted and reported as "N similar messages suppressed" once the next window opens (or when
//! the throttle is flushed). Shared by the agent and the server so both bound their logs alike.
//! No I/O: the caller logs what [`Throttle::admit`] allows.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines per window for each sandbox (the server) or each source (the agent).
pub const DEFAULT_BURST: u32 = 10;
/// Length of a window.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);

/// What to do with one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Log it. `suppressed` lines were dropped since the last logged one: say so first.
    Log { suppressed: u64 },
    /// Drop it (it was counted).
    Drop,
}

#[derive(Debug)]
struct State {
    window_start: Instant,
    logged: u32,
    suppressed: u64,
}

/// A rate limit on log lines; cheap (one uncontended mutex) so it can sit on hot paths.
#[derive(Debug)]
pub struct Throttle {
    burst: u32,
    window: Duration,
    state: Mutex<State>,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::new(DEFAULT_BURST, DEFAULT_WINDOW)
    }
}

impl Throttle {
    pub fn new(burst: u32, window: Duration) -> Self {
        Throttle {
            burst,
            window,
            state: Mutex::new(State {
                window_start: Instant::now(),
                logged: 0,
                suppressed: 0,
            }),
        }
    }

    pub fn burst(&self) -> u32 {
        self.burst
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// Decides about one line now.
    pub fn admit(&self) -> Admit {
        self.admit_at(Instant::now())
    }

    /// [`Throttle::admit`] as a yes/no; before a yes, `report` gets the count of lines dropped
    /// since the last one logged (when non-zero), to log as "N similar messages suppressed".
    pub fn allow(&self, report: impl FnOnce(u64)) -> bool {
        match self.admit() {
            Admit::Log { suppressed } => {
                if suppressed > 0 {
                    report(suppressed);
                }
                true
            }
            Admit::Drop => false,
        }
    }

    fn admit_at(&self, now: Instant) -> Admit {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if now.duration_since(state.window_start) >= self.window {
            state.window_start = now;
            state.logged = 0;
        }
        if state.logged < self.burst {
            state.logged += 1;
            Admit::Log {
                suppressed: std::mem::take(&mut state.suppressed),
            }
        } else {
            state.suppressed += 1;
            Admit::Drop
        }
    }

    /// Lines dropped and not yet reported (reset to zero): report them when the source goes
    /// away, so a flood that ended is still visible in the log.
    pub fn flush(&self) -> u64 {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut state.suppressed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_drop_then_report_in_the_next_window() {
        let t = Throttle::new(2, Duration::from_secs(10));
        let start = Instant::now();
        assert_eq!(t.admit_at(start), Admit::Log { suppressed: 0 });
        assert_eq!(t.admit_at(start), Admit::Log { suppressed: 0 });
        for _ in 0..1000 {
            assert_eq!(t.admit_at(start), Admit::Drop);
        }
        let later = start + Duration::from_secs(10);
        assert_eq!(t.admit_at(later), Admit::Log { suppressed: 1000 });
        assert_eq!(t.admit_at(later), Admit::Log { suppressed: 0 });
        assert_eq!(t.admit_at(later), Admit::Drop);
        assert_eq!(t.flush(), 1);
        assert_eq!(t.flush(), 0);
    }
}
